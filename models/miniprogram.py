"""Mini-program members: login through jscode2session, unionid merge, phone binding."""
