"""demo: the main job end to end on the built-in simulator (`cometd-tape demo`).

The one room that composes the others (recorder, replay, analysis); nothing imports it.
"""
