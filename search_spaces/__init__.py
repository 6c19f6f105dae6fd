"""YAML experiment configs and search spaces shipped with raysearch, and the search-space
loader (:func:`search_spaces.loader.load_space`)."""
