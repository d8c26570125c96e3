"""The simulated live-streaming world: latent interests, rooms with highlight moments, exposures
and delayed feedback, written as KuaiLive-schema tables with the ground truth beside them."""
