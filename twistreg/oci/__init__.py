# -*- test-case-name: tests.test_oci_errors,tests.test_oci_names,tests.test_oci_manifests -*-
"""
The V2 (OCI Distribution) rules: the spec's errors, names and digests, manifests and their
media types. Nothing here does I/O or knows HTTP types: the routes parse with these rules,
raise L{twistreg.oci.errors.OCIError} and render it.
"""
