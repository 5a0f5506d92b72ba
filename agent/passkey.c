/* Not yet written. */
typedef int passkey_placeholder;
