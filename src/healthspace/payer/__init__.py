"""Payer analytics: DRG/DIP grouping of inpatient cases and what payers build on it."""
