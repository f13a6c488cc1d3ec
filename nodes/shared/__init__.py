"""Services node packs share without importing each other (model folders).

Not a pack: it registers no nodes.  Packs may import it and :mod:`nodegraph`;
it imports neither a pack nor torch.
"""
