"""The one place that decides cancellation: filters, the authoriser hook, held cancels."""
