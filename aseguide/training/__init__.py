"""Training and evaluation of small MatterGen-architecture score models (``aseguide train``)."""
