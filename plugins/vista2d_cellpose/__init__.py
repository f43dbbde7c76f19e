"""vista2d plugin: Cellpose-style flows: the VISTA2D head, the flow loss and the flows -> masks postprocessor."""
