"""The Kinect v2 skeleton's structure, the one table every drawing, export and model input uses."""

# NTU's 24 bones as 0-based (child, parent) joint pairs, the parent nearer joint 20 (spine at the
# shoulders), the root: the pairs of CTR-GCN's and ST-GCN's NTU graph.
BONES = (
    (0, 1), (1, 20), (2, 20), (3, 2), (4, 20), (5, 4), (6, 5), (7, 6), (8, 20), (9, 8), (10, 9), (11, 10),
    (12, 0), (13, 12), (14, 13), (15, 14), (16, 0), (17, 16), (18, 17), (19, 18), (21, 22), (22, 7),
    (23, 24), (24, 11),
)
