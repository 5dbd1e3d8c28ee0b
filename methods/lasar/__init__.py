"""LASAR plugin, one file per part: ``config`` (every setting and ablation), ``latent`` (the latent loop and the
``prefix`` hook), ``anchors`` (CoT segments and their anchors), ``stage2`` (Stage 2), ``rl`` (the RL terms),
``losses`` (alignment distances, REINFORCE), ``segment`` (semantic segmentation) and ``method`` (the class)."""
from methods.lasar.method import LASAR  # noqa: F401  (registers "lasar")
