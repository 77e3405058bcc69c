"""
The V1 ⇄ V2 bridge: V1 images served to V2 clients and the reverse, each protocol keeping its
own tree (0.9.1's, the Go registry's) and the bridge linking them.
"""
