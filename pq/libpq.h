// libpq for control-plane connections, loaded with dlopen on first use. Linked
// normally, Debian's libpq brings ~15 shared libraries (Kerberos, LDAP, GnuTLS)
// whose constructors double the daemon's start-up time and add ~4 MB of RSS to
// every sidecar, including those that never open a control connection.
#pragma once
#include <libpq-fe.h>

namespace pq {

struct Api {
  decltype(&PQconnectStart) connectStart;
  decltype(&PQconnectPoll) connectPoll;
  decltype(&PQstatus) status;
  decltype(&PQerrorMessage) errorMessage;
  decltype(&PQsocket) socket;
  decltype(&PQsetnonblocking) setnonblocking;
  decltype(&PQsendQuery) sendQuery;
  decltype(&PQsendQueryParams) sendQueryParams;
  decltype(&PQflush) flush;
  decltype(&PQconsumeInput) consumeInput;
  decltype(&PQisBusy) isBusy;
  decltype(&PQgetResult) getResult;
  decltype(&PQresultStatus) resultStatus;
  decltype(&PQresultErrorMessage) resultErrorMessage;
  decltype(&PQresultErrorField) resultErrorField;
  decltype(&PQntuples) ntuples;
  decltype(&PQnfields) nfields;
  decltype(&PQgetvalue) getvalue;
  decltype(&PQgetisnull) getisnull;
  decltype(&PQclear) clear;
  decltype(&PQnotifies) notifies;
  decltype(&PQfreemem) freemem;
  decltype(&PQfinish) finish;
};

// The loaded API, or null (the reason logged once) if libpq.so.5 is unavailable.
const Api* api();

}  // namespace pq
