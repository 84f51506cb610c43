package kubernetes_test

import (
	"context"
	"fmt"

	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes/fake"

	"github.com/pylon-gateway/pylon"
	"github.com/pylon-gateway/pylon/discovery/kubernetes"
)

// A Source follows the ready endpoints of a Service. In a program the
// client comes from kubernetes.NewForConfig(rest.InClusterConfig()); here
// it is client-go's fake clientset, holding one EndpointSlice.
func ExampleNew() {
	port, ready, notReady := int32(8080), true, false
	client := fake.NewClientset(&discoveryv1.EndpointSlice{
		ObjectMeta: metav1.ObjectMeta{Name: "orders-x1", Namespace: "shop",
			Labels: map[string]string{discoveryv1.LabelServiceName: "orders"}},
		AddressType: discoveryv1.AddressTypeIPv4,
		Ports:       []discoveryv1.EndpointPort{{Name: new("http"), Port: &port}},
		Endpoints: []discoveryv1.Endpoint{
			{Addresses: []string{"10.1.0.7"}, Conditions: discoveryv1.EndpointConditions{Ready: &ready}},
			{Addresses: []string{"10.1.0.8"}, Conditions: discoveryv1.EndpointConditions{Ready: &notReady}},
		},
	})
	src, err := kubernetes.New(client, kubernetes.Options{Namespace: "shop", Service: "orders", Port: "http"})
	if err != nil {
		panic(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	src.Watch(ctx, func(eps []pylon.Endpoint) {
		fmt.Println(eps)
		cancel() // one set is enough here; discovery.Keep runs Watch for a Backend
	}, func(error) {})
	// Output:
	// [{http://10.1.0.7:8080 1 0}]
}
