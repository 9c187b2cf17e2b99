"""The command-line tools, one module each with ``main(argv=None) -> int``: the console scripts of the installed
package (``bert4rec-train``, ``bert4rec-tune``, ``bert4rec-report``, ``bert4rec-export``) and the checkout's
top-level scripts (``trainrec.py``, ``tune.py``, ``report.py``, ``export.py``), which only call them."""
