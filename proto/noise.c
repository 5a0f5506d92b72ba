/* Not yet written. */
typedef int noise_placeholder;
