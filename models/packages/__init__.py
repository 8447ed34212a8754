"""Service packages (套餐/次卡): N uses of a service or a time pass, sold at the till, used per visit."""
