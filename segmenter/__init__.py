"""Segmenter: real-time customer segmentation on Apache Kafka."""

__version__ = "0.1.0"
