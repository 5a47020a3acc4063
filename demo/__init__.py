"""``make demo``: changegate end to end on a local control plane, told as a story.

Kept outside the ``controller`` package: it is a walkthrough for people (and a test that the
walkthrough still holds), not part of what runs in a cluster.
"""
