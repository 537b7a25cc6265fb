"""Durable tasks: records, events, the queue, workers.

The map is ARCHITECTURE.md ("memory/", "A durable task"); the details docs/decisions.md
("Durable tasks").

Each module holds one idea and they import each other in one direction only
(no cycle, not even for types):

    states, ids, pages, scripts      pure: the state machine, task ids, page tokens, Lua scripts
    trace_context                    the submitting call's trace context a task carries
    records                          a task's hash: fields, record codec, snapshot, patch (pure)
    events                           encoding and decoding of a task's events (pure)
    entries                          queue entries: what a stream entry names and carries (pure)
    effects                          a task's side effects from its steps, for dead letters (pure)
    store                            TaskStore: guarded commits (one script), owner-scoped reads
    reader                           TaskEvents: a task's events for its owner (page, live watch)
    execution                        the executor interface, checkpoints, one attempt's hold
    settlement                       the agent runtime's hook before the task layer fails a task
    dead_letters                     DeadLetters: poisoned and unreadable entries; list, redrive
    admission                        TaskAdmission: submit and run (inline), idempotent creation
    answers                          TaskAnswers: resume a paused task (owner or approver)
    delivery                         TaskDelivery: consumer groups, claim, read, reclaim, start
    stats                            queue statistics: depth, pending, lag, dead letters, outbox
    queue                            TaskQueue: the parts above assembled for one domain
    sweeper                          TaskSweeper: orphaned inline runs, expired pending actions
    worker                           TaskWorker: reads the queue and runs attempts

Import from the module that defines a name (`from memory.tasks.queue import TaskQueue`);
this package re-exports nothing.
"""
