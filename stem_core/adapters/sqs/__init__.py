"""The Amazon SQS broker (``sqs://``): SQS queues per priority band, SNS for broadcast.

Needs the ``sqs`` extra (``aiobotocore``); ``stem_core.adapters`` imports this package only
when an ``sqs://`` URL is used. There is no SQS result backend: pair it with ``redis://``,
``postgresql://`` or ``sqlite://``. Design and costs: ``docs/sqs.md``.
"""

from __future__ import annotations

from .broker import SQSBroker

__all__ = ["SQSBroker"]
