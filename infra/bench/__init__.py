"""`modelfn bench`: cold start, warm latency, memory, size and cost per million requests of one model,
measured on this machine side by side with its baselines (fp32 ONNX, transformers + torch, bare
onnxruntime + tokenizers).

    run.py      one run: the model, its bundle and baselines, every measurement, the result dict
    probe.py    the child program each measurement runs in (a fresh interpreter per cold start)
    measure.py  runs the children: cold starts and the interleaved warm loop
    sizing.py   Lambda memory sizes: CPU share emulation, per-size runs, image contents size
    image.py    the built function image under a container engine: cold start through its RIE, warm
                latency, Lambda sizes under the engine's CPU and memory limits
    image_build.py  builds (or reuses) that image from `modelfn build`'s context
    cost.py     published prices, cost per million requests, size picking, Lambda-or-GPU break-even
    charts.py   PNG charts (matplotlib, the `bench` extra)
    report.py   terminal table, JSON and bench/RESULTS.md

This package imports nothing heavy at import time: probe.py runs inside the measured processes.
"""
