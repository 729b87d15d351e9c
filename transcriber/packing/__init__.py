"""The short-clip path: several short jobs decoded together in Whisper's 30 s windows.

- :mod:`~transcriber.packing.plan`: which clips share a window, laid out how, and how a
  window's segments are given back to their clips;
- :mod:`~transcriber.packing.windows`: the windows through the speech model (the VAD's cut of
  each clip, the decoder's own times);
- :mod:`~transcriber.packing.lockstep`: several windows decoded side by side, their beam
  searches batched;
- :mod:`~transcriber.packing.packed_jobs`: the jobs claimed, fetched, run together and each
  saved as if it had run alone.

The job path (:mod:`transcriber.job_run`) calls in here when its job is a short first attempt;
nothing in here calls back into it but through :mod:`transcriber.job_steps`.
"""
