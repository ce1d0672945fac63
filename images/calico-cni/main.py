"""The zipapp's entry: one program answering as calico, calico-ipam or install (argv[0])."""

from testbed.reference.calico.cni import main

raise SystemExit(main())
