"""raygrid metrics: SR fidelity (PSNR/SSIM on Y, BasicSR protocol), correlation with subjective
scores (SRCC/KRCC/PLCC with bootstrap CIs), and the evaluator panel for SR outputs.

  raygrid.metrics.sr           psnr_y, ssim_y, psnr_rgb, ssim_rgb, psnr_y_batch, ssim_y_batch
  raygrid.metrics.correlation  srcc, krcc, plcc, plcc_logistic, correlations
  raygrid.metrics.panel        Evaluator, build_panel, evaluate
"""
