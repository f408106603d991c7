"""VM manager: backends (qemu, libvirt), pools, console watching, SSH.

Typical use::

    from kvmlab.vmm.factory import initramfs_root, make_backend, prepare
    from kvmlab.vmm.pool import Pool

    root = initramfs_root(kernel)                       # or kvmlab.images.get_root(recipe)
    prep = prepare(config, kernel, root)                 # probes KVM once per host
    with Pool(prep.spec, 4, backend=make_backend(config.vm), timeouts=prep.timeouts,
              ready_marker=prep.ready_marker) as pool:
        boots = pool.map(lambda m: m.wait_ready())       # BootResult per VM
        outs = pool.map(lambda m: m.run("uname -r"))     # CommandResult per VM

Backends implement :mod:`kvmlab.vmm.backend` (create an instance: console fd,
SSH port, alive, close); everything shared lives in :mod:`kvmlab.vmm.machine`
and :mod:`kvmlab.vmm.pool`.
"""
