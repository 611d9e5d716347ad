"""Pretraining: UTA and the MIM / FD / UTA+MIM baselines from a frozen teacher, and CLIP teachers for the embedded world."""
