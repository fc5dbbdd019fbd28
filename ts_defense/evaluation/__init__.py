"""Layer 4, measurement: PSNR/SSIM of attacked denoisers (:mod:`.metrics`), transfer matrices
(:mod:`.transfer`), budget curves and the pass-through reference (:mod:`.budget`), the
typicality of perturbations (:mod:`.typicality`) and typical-set detection (:mod:`.detect`)."""
