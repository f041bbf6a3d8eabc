"""The RabbitMQ broker (``amqp://``, ``amqps://``): a broker only; pair it with a result
backend on SQLite, Redis or PostgreSQL. Needs the ``rabbitmq`` extra (aio-pika)."""

from __future__ import annotations

from .broker import RabbitMQBroker

__all__ = ["RabbitMQBroker"]
