"""Tests for distlog.log, the storage engine."""
