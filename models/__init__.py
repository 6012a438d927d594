"""The library: scoring, retrieval, learning and evaluation, with no Kafka, Faust or CLI.

Rooms, one job each: :mod:`.scoring` (scorers and the cascade), :mod:`.onnx` (onnxruntime
sessions, graph rewrites, export), :mod:`.retrieval` (first stages), :mod:`.learning` (the
online ranker from clicks), :mod:`.evaluation` (metrics and offline evaluation),
:mod:`.assets` (the one place that knows where models and corpora live), :mod:`.types`
(value types the rooms share) and :mod:`.registry` (signed ranker versions).

Sub-packages do not import their modules: ``import streamrank.models.scoring`` loads no
model runtime, so the command line and tools stay quick to start. Import what you use from
its module.
"""
