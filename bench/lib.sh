# Shared by the bench scripts (sourced, not run): loopback ports and the simulator's test account.

# A free TCP port on 127.0.0.1 (the kernel's choice, released at once for the next process).
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'; }

# Waits (up to 10 s) until something accepts connections on 127.0.0.1:$1.
wait_port() {
    for _ in $(seq 1 200); do
        if python3 -c "import socket,sys; s=socket.socket(); s.settimeout(0.2); sys.exit(s.connect_ex(('127.0.0.1',$1)))" 2>/dev/null; then return 0; fi
        sleep 0.05
    done
    echo "nothing listens on port $1" >&2; return 1
}

# The simulator's account (AWS's documented example key pair: not a secret).
secret="wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"
user="AKIAIOSFODNN7EXAMPLE"
