"""Stage 1, audio: decode, resample, window, condition, fingerprint and perturb waveforms."""
