"""Helpers for the reliability and security tests: private PostgreSQL servers, state comparison, a chat writer."""
