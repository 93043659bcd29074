"""The BLAS kernels threadpoolctl reports, printed with every benchmark's figures (a machine
that forces slow kernels, e.g. with OPENBLAS_CORETYPE, gives other ratios)."""

from threadpoolctl import threadpool_info


def kernels():
    seen = []
    for info in threadpool_info():
        if info.get("user_api") == "blas":
            text = f"{info.get('internal_api')} {info.get('version')} {info.get('architecture')}, {info.get('num_threads')} threads"
            if text not in seen:
                seen.append(text)
    return "; ".join(seen) or "unknown"
