"""The GIE node encoder: MFQ fusion of streamer modalities, user inputs, heterogeneous GraphSAGE."""
from gie.model.encoder import GIEModel, ModelSpec

__all__ = ["GIEModel", "ModelSpec"]
