"""Segmenter's worker beside Quix Streams and Bytewax on the same work (issue 11, "Measure"):
`python -m bench.peers`. See bench/README.md. Imports nothing: the peer scripts import this
package from the peers' own venv."""
