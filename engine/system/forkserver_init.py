"""Imported only by the trainer's forkserver (the last of ``procs.TRAINER_PRELOAD``): tie the
server's life to the trainer's.

Python's forkserver outlives a SIGKILLed trainer while it still has running children, and its
children (the workers) would then go on training for a run nobody owns. With this, the kernel
sends the forkserver SIGTERM when the trainer dies; the workers in turn have the same request
on their parent (the forkserver), so they checkpoint and exit.
"""

from engine.system.procs import die_with_parent

die_with_parent()
