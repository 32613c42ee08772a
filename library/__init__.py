"""What search and the browser stand on: the patch folder format, GM names, the soundfont renderer, the patch
database (SQLite) and search with retrieval scoring. Imports dsp and neural; training, export and the edge import it."""
