"""WeChat Pay orders: catalogue (packages, plans), prepay, exactly-once settling, reconciliation, refunds."""
