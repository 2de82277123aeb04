"""The pure domain model at the bottom of the package graph: events and their validation
(`events`), a customer's state and its fold (`state`), segment-change records (`changes`) and the
state codec (`codec`). No Kafka, Redis or clock; imports nothing of Segmenter's but
`model.errors`-free standard code.

    model -> rules -> streams (engine, simulate) -> streams.runtime -> connectors -> segmenter (CLI)
"""

from model.native import activate

activate(__path__, __name__)  # the compiled build, when one matches the sources (model/native.py)
