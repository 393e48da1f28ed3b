import nst.compat  # noqa: F401  -- NumPy aliases MXNet needs, before any mxnet import
