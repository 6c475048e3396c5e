package io.nbdtail.nbd.tls;

import io.netty.channel.ChannelDuplexHandler;

/** Placeholder until PSK is implemented. */
final class PskTlsHandler extends ChannelDuplexHandler {
    PskTlsHandler(final PskKeys keys) {
        throw new UnsupportedOperationException("TLS-PSK is not implemented yet");
    }

    ClientIdentity identity() {
        return null;
    }
}
