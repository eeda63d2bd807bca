"""The GIE node encoder: MFQ fusion of streamer modalities (mfq.py, plain PyTorch), user
inputs and heterogeneous GraphSAGE (encoder.py, DGL)."""
