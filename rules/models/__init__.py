"""Predictive models: BG/NBD + Gamma-Gamma and k-means. Evaluation (bgnbd, kmeans, file,
history) is pure Python; fitting (fit) needs the `models` extra and is imported only by the CLI.
"""
