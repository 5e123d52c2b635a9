def pytest_configure(config):
    config.addinivalue_line('markers', 'compile: runs torch.compile (skip with -m "not compile", or set DC_SKIP_COMPILE=1)')
