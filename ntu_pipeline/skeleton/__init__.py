"""The skeleton wing: `.skeleton` text -> records (`parse`) -> actor arrays and motion (`actors`).

`normalize` holds the loader-side transforms (centre on the spine, align the body axes).
"""
