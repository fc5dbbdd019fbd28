"""Layer 4, measurement: PSNR/SSIM of attacked denoisers (:mod:`.metrics`), transfer matrices
(:mod:`.transfer`), budget curves and the pass-through reference (:mod:`.budget`), the
typicality of perturbations (:mod:`.typicality`), typical-set detection (:mod:`.detect`), the
parameter-free worst case over an attack ensemble (:mod:`.auto`) and the evidence that it
converged (:mod:`.convergence`)."""
