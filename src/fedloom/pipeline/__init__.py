"""The upload pipeline: what happens to a client's upload between ``client_update`` and the server step.

``client_update`` → (attack, for a malicious client) → transforms in the configured order (clip, noise,
sparsify, quantize; each may keep client state and draws randomness only from the seeded streams) → encode to the
wire form (bytes are counted here, from the encoded payload) → decode → the aggregator (mean, median, Krum ...).
Every engine calls the same per-client finishing step (:class:`UploadPipeline.finish`), so an algorithm runs
under any chain and any aggregator without being edited. See docs/architecture.md, "Seams".
"""
