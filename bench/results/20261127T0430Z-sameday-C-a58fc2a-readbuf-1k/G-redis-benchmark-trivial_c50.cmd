redis-benchmark -p 39385 -c 50 -n 100000 EVALSHA e0e1f9fabfc9d4800c877a703b823ac0578ff8db 0
