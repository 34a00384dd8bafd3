"""Degradations that turn curated high-quality clips into paired LQ-HQ training data.

Each degradation is a small class with a typed config (ranges, paper defaults) and a
typed record of the values drawn for one video (`bfvr`, `brightness`, `pixel_flicker`);
`recipe` composes them from YAML and derives every random draw from (run seed, clip id,
recipe name, window), so results do not depend on worker order or cluster size.
`shards` stores the pairs; `loader` is the torch dataset training reads.
"""
