"""Layer 1-2, the noise: typical-set statistics (:mod:`.typical`), the nominal sigma schedule
(:mod:`.sigma`), the out-of-distribution families (:mod:`.families`) and the TS sampler that
draws them (:mod:`.sampler`). Pure tensor code: nothing here knows about models."""
