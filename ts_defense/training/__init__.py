"""Layer 3, training: the TS training step (:mod:`.step`), adversarial training
(:mod:`.adversarial`), named recipes (:mod:`.recipes`), a complete loop (:mod:`.fit`) and
checkpoints that resume it bit for bit (:mod:`.checkpoint`)."""
