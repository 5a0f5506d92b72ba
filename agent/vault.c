/* Not yet written. */
typedef int vault_placeholder;
