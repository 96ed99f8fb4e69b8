#!/usr/bin/env python3
"""Signs a webhook body for the tests, the way the providers do.

    sign_webhook.py stripe SECRET [TIMESTAMP] < body   prints a Stripe-Signature header,
        made by the official stripe library (stripe.WebhookSignature);
    sign_webhook.py creem SECRET < body                prints a creem-signature header
        (hex HMAC-SHA256 of the raw body; Creem ships no Python library).
"""
import hashlib
import hmac
import sys


def main() -> None:
    mode, secret = sys.argv[1], sys.argv[2]
    payload = sys.stdin.buffer.read().decode("utf-8")
    if mode == "stripe":
        import stripe

        timestamp = int(sys.argv[3]) if len(sys.argv) > 3 else None
        print(stripe.WebhookSignature.generate_signature_header(payload, secret, timestamp=timestamp))
    elif mode == "creem":
        print(hmac.new(secret.encode("utf-8"), payload.encode("utf-8"), hashlib.sha256).hexdigest())
    else:
        sys.exit(f"unknown mode {mode}")


if __name__ == "__main__":
    main()
