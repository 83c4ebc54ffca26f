"""Images as flat rows in [-1, 1]: the built-in offline data sets (``load_dataset``) and your own files
(``load_images``)."""
